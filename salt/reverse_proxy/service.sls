{#- nginx runs; a configuration that passed `nginx -t` is reloaded, never a
    restart (open connections finish on the old workers). #}
{%- from 'reverse_proxy/map.jinja' import rp %}
include:
  - reverse_proxy.config

reverse-proxy-nginx-running:
  unit.running:
    - name: {{ rp.nginx.service }}
    - enable: true
    - reload: true
    - watch:
      - file: reverse-proxy-nginx-config-managed

reverse-proxy-nginx-safe-reload-managed:
  file.managed:
    - name: {{ rp.nginx.safe_reload }}
    - user: root
    - group: root
    - mode: '0755'
    - contents: |
        #!/bin/sh
        # Managed by Salt (reverse_proxy.service): reload nginx only with a configuration
        # `nginx -t` accepts (the deploy hook and the master's acme runner call this).
        set -e
        {{ rp.nginx.binary }} -t -q
        exec systemctl reload {{ rp.nginx.service }}
