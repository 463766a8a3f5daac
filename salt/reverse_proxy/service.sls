{#- nginx runs; a configuration that passed `nginx -t` is reloaded, never a
    restart (open connections finish on the old workers). #}
{%- from 'reverse_proxy/map.jinja' import rp %}
include:
  - reverse_proxy.config

reverse-proxy-nginx-running:
  service.running:
    - name: {{ rp.nginx.service }}
    - enable: true
    - reload: true
    - watch:
      - file: reverse-proxy-nginx-config-managed
