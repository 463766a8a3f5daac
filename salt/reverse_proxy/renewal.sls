{#- Renewal: certbot.timer (Debian's) renews; certbot runs the deploy hook
    after each renewed lineage: it reloads nginx after `nginx -t` and tells the
    master (event platform/acme/renewed, data: the lineage's name only), whose
    reactor hands the mail certificate on. A daily timer fires
    platform/acme/expiring for a certificate close to its end (a renewal that
    keeps failing). #}
{%- from 'reverse_proxy/map.jinja' import rp, acme %}
{%- set hook = acme.config_dir ~ '/renewal-hooks/deploy/salt-event' %}
{%- set check = '/usr/local/sbin/acme-expiry-check' %}
include:
  - reverse_proxy.package
  - reverse_proxy.service

reverse-proxy-renewal-deploy-hook-managed:
  file.managed:
    - name: {{ hook }}
    - source: salt://reverse_proxy/files/deploy-hook.sh.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: true
    - context:
        safe_reload: {{ rp.nginx.safe_reload }}
        salt_call: {{ rp.renewal.salt_call }}
        timeout: {{ rp.renewal.event_timeout }}
    - require:
      - pkg: reverse-proxy-packages-installed
      - file: reverse-proxy-nginx-safe-reload-managed

reverse-proxy-renewal-expiry-check-managed:
  file.managed:
    - name: {{ check }}
    - source: salt://reverse_proxy/files/expiry-check.sh.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0755'
    - context:
        live_dir: {{ acme.config_dir }}/live
        warn_days: {{ rp.renewal.expiry_warn_days }}
        salt_call: {{ rp.renewal.salt_call }}
        timeout: {{ rp.renewal.event_timeout }}

reverse-proxy-renewal-expiry-service-managed:
  file.managed:
    - name: /etc/systemd/system/acme-expiry-check.service
    - contents: |
        # Managed by Salt (reverse_proxy.renewal)
        [Unit]
        Description=Tell the Salt master about certificates close to expiry
        After=network-online.target

        [Service]
        Type=oneshot
        ExecStart={{ check }}
    - require:
      - file: reverse-proxy-renewal-expiry-check-managed

reverse-proxy-renewal-expiry-timer-managed:
  file.managed:
    - name: /etc/systemd/system/acme-expiry-check.timer
    - contents: |
        # Managed by Salt (reverse_proxy.renewal)
        [Unit]
        Description=Daily check of the ACME certificates' expiry

        [Timer]
        OnCalendar={{ rp.renewal.expiry_on_calendar }}
        Persistent=true
        RandomizedDelaySec=15m

        [Install]
        WantedBy=timers.target

reverse-proxy-renewal-expiry-timer-running:
  unit.running:
    - name: acme-expiry-check.timer
    - enable: true
    - watch:
      - file: reverse-proxy-renewal-expiry-timer-managed
      - file: reverse-proxy-renewal-expiry-service-managed
