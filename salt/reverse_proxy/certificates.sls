{#- Certificates from the site's ACME directory with certbot `certonly`
    (certbot never edits the nginx configuration: it is ours). http-01 answers
    from the webroot nginx serves on port 80, so the first certificate of a
    route is requested once nginx runs; the configuration is then rendered
    again, now with that route's HTTPS server, checked and reloaded. A second
    run finds every lineage and changes nothing. certbot runs its deploy hooks
    on renewals only, so a lineage's first issuance runs the deploy hook here:
    the master hears of it as of a renewal, and hands the mail certificate over
    from the first day. #}
{%- from 'reverse_proxy/map.jinja' import rp, acme, routes, resolvers, lineages, wildcard, ca_bundle_pem, certbot_env %}
{%- set credentials = acme.config_dir ~ '/rfc2136.ini' %}
{%- set deploy_hook = acme.config_dir ~ '/renewal-hooks/deploy/salt-event' %}
include:
  - reverse_proxy.config
  - reverse_proxy.service
  - reverse_proxy.renewal

{%- if ca_bundle_pem %}

reverse-proxy-acme-ca-bundle-managed:
  file.managed:
    - name: {{ acme.ca_bundle_file }}
    - contents: {{ ca_bundle_pem | json }}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: true
    - require_in:
      - file: reverse-proxy-certbot-service-env-managed
{%- endif %}

{#- certbot.timer's renewals run with the same trust as the first request. #}
reverse-proxy-certbot-service-env-managed:
  file.managed:
    - name: /etc/systemd/system/certbot.service.d/platform.conf
    - makedirs: true
    - contents: |
        # Managed by Salt (reverse_proxy.certificates)
        [Service]
{%- for key, value in certbot_env | dictsort %}
        Environment={{ key }}={{ value }}
{%- endfor %}
    - require:
      - pkg: reverse-proxy-packages-installed

{#- systemd reads a changed drop-in only after a daemon-reload. #}
reverse-proxy-certbot-service-env-loaded:
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: reverse-proxy-certbot-service-env-managed

{%- if wildcard %}

{#- dns-01 through RFC 2136: the TSIG key is read from Vault when the state
    runs and lives only in this 0600 file. #}
reverse-proxy-acme-rfc2136-credentials-managed:
  file.managed:
    - name: {{ credentials }}
    - source: salt://reverse_proxy/files/rfc2136.ini.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: false
    - context:
        server: {{ acme.get('dns_server', '') }}
        tsig: {{ acme.tsig | json }}
    - require:
      - pkg: reverse-proxy-packages-installed
{%- endif %}

{%- for lineage, names in lineages | dictsort %}

reverse-proxy-certificate-{{ lineage }}-issued:
  cmd.run:
    - name: >-
        certbot certonly --non-interactive --agree-tos --no-eff-email
        --email {{ acme.email | quote }} --server {{ acme.directory | quote }}
        --cert-name {{ lineage | quote }}
{%-   if wildcard %}
        --authenticator dns-rfc2136 --dns-rfc2136-credentials {{ credentials | quote }}
        --dns-rfc2136-propagation-seconds {{ acme.propagation_seconds | string | quote }}
{%-   else %}
        --authenticator webroot --webroot-path {{ acme.webroot | quote }}
{%-   endif %}
{%-   for name in names %}
        --domain '{{ name }}'
{%-   endfor %}
    - creates: {{ acme.config_dir }}/renewal/{{ lineage }}.conf
{%-   if certbot_env %}
    - env: {{ certbot_env | json }}
{%-   endif %}
    - require:
      - file: reverse-proxy-certbot-service-env-managed
{%-   if wildcard %}
      - file: reverse-proxy-acme-rfc2136-credentials-managed
{%-   else %}
      - unit: reverse-proxy-nginx-running
      - file: reverse-proxy-webroot-managed
{%-   endif %}

reverse-proxy-certificate-{{ lineage }}-first-issuance-announced:
  cmd.run:
    - name: {{ deploy_hook | quote }}
    - env:
        RENEWED_LINEAGE: {{ acme.config_dir }}/live/{{ lineage }}
    - onchanges:
      - cmd: reverse-proxy-certificate-{{ lineage }}-issued
    - require:
      - file: reverse-proxy-renewal-deploy-hook-managed
{%- endfor %}

{#- The routes' HTTPS servers: a route's server is rendered once its
    certificate exists, checked with the live nginx.conf, then nginx reloads. #}
reverse-proxy-nginx-tls-config-managed:
  file.managed:
    - name: {{ rp.nginx.tls_dir }}/servers.conf
    - source: salt://reverse_proxy/files/tls_servers.conf.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: >-
        {{ rp.nginx.check_tls | quote }}
    - tmp_ext: .conf
    - context:
        rp: {{ rp | json }}
        routes: {{ routes | json }}
        resolvers: {{ resolvers | json }}
    - require:
      - file: reverse-proxy-nginx-tls-check-managed
      - unit: reverse-proxy-nginx-running
{%- for lineage in lineages | sort %}
      - cmd: reverse-proxy-certificate-{{ lineage }}-issued
{%- endfor %}

reverse-proxy-nginx-tls-reloaded:
  unit.running:
    - name: {{ rp.nginx.service }}
    - reload: true
    - watch:
      - file: reverse-proxy-nginx-tls-config-managed
