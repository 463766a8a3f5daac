{#- nginx's configuration, bootstrap-safe: a route's HTTPS server is rendered
    only once its certificate exists, so nginx starts (and serves the http-01
    webroot) before the first certificate. Every change is a candidate file
    checked with `nginx -t -c <candidate>` before it replaces the live one: a
    candidate nginx rejects fails this state and the running nginx keeps its
    old configuration. #}
{%- from 'reverse_proxy/map.jinja' import rp, acme, routes, resolvers %}
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

reverse-proxy-nginx-config-managed:
  file.managed:
    - name: {{ rp.nginx.config }}
    - source: salt://reverse_proxy/files/nginx.conf.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: {{ rp.nginx.binary }} -t -q -c
    - tmp_ext: .conf
    - context:
        rp: {{ rp | json }}
        acme: {{ acme | json }}
        routes: {{ routes | json }}
        resolvers: {{ resolvers | json }}
    - require:
      - pkg: reverse-proxy-packages-installed
      - file: reverse-proxy-webroot-managed
