{#- The systemd unit of the server (k3s server) or an agent (k3s agent),
    restarted on a new binary or config. #}
{%- from 'k3s/map.jinja' import install, is_server, service, config_file %}
include:
  - k3s.binary
  - k3s.config

k3s-service-unit-managed:
  file.managed:
    - name: /etc/systemd/system/{{ service }}.service
    - source: salt://k3s/files/k3s.service.j2
    - template: jinja
    - mode: '0644'
    - context:
        binary: {{ install.binary | json }}
        command: {{ ('server' if is_server else 'agent') | json }}
        config: {{ config_file | json }}

k3s-service-running:
  unit.running:
    - name: {{ service }}
    - enable: true
    - watch:
      - file: k3s-service-unit-managed
      - file: k3s-config-file-managed
      - file: k3s-binary-installed
{%- if not is_server %}
      - k3s: k3s-config-join-token-present
{%- endif %}
