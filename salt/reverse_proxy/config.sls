{#- nginx's configuration, bootstrap-safe: nginx.conf has everything but the
    routes' HTTPS servers, so nginx starts (and serves the http-01 webroot)
    before the first certificate; the HTTPS servers come in their own file,
    included from tls_dir, once their certificates exist
    (reverse_proxy.certificates). Each file is managed by one state, and every
    change is a candidate checked by `nginx -t` with the rest of the live
    configuration before it replaces the live one: a candidate nginx rejects
    fails its state and the running nginx keeps its old configuration. #}
{%- from 'reverse_proxy/map.jinja' import rp, acme, routes %}
include:
  - reverse_proxy.package

reverse-proxy-webroot-managed:
  file.directory:
    - name: {{ acme.webroot }}/.well-known/acme-challenge
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: true

{#- Debian's example site is not included by our nginx.conf; removed so that
    nobody edits it thinking it is live. #}
reverse-proxy-nginx-default-site-absent:
  file.absent:
    - name: /etc/nginx/sites-enabled/default
    - require:
      - pkg: reverse-proxy-packages-installed

reverse-proxy-nginx-tls-dir-managed:
  file.directory:
    - name: {{ rp.nginx.tls_dir }}
    - user: root
    - group: root
    - mode: '0755'
    - require:
      - pkg: reverse-proxy-packages-installed

reverse-proxy-nginx-tls-check-managed:
  file.managed:
    - name: {{ rp.nginx.check_tls }}
    - source: salt://reverse_proxy/files/nginx-check-tls.sh.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0755'
    - context:
        config: {{ rp.nginx.config }}
        tls_dir: {{ rp.nginx.tls_dir }}
        binary: {{ rp.nginx.binary }}

reverse-proxy-nginx-config-managed:
  file.managed:
    - name: {{ rp.nginx.config }}
    - source: salt://reverse_proxy/files/nginx.conf.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: >-
        {{ rp.nginx.binary | quote }} -t -q -c
    - tmp_ext: .conf
    - context:
        rp: {{ rp | json }}
        acme: {{ acme | json }}
        routes: {{ routes | json }}
    - require:
      - pkg: reverse-proxy-packages-installed
      - file: reverse-proxy-webroot-managed
      - file: reverse-proxy-nginx-tls-dir-managed
