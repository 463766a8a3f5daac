{#- The systemd unit, ours for both flavors, restarted on a new config or certificate. #}
{%- from 'vault/map.jinja' import vault, flavor %}
include:
  - vault.config
  - vault.tls

vault-service-unit-managed:
  file.managed:
    - name: /etc/systemd/system/{{ flavor.service }}.service
    - source: salt://vault/files/service.unit.j2
    - template: jinja
    - context:
        description: {{ 'HashiCorp Vault' if vault.server.flavor == 'vault' else 'OpenBao' }}
        binary: {{ flavor.binary }}
        config: {{ flavor.config_dir }}/server.hcl
        user: {{ flavor.user }}

vault-service-running:
  unit.running:
    - name: {{ flavor.service }}
    - enable: true
    - watch:
      - file: vault-service-unit-managed
      - file: vault-config-file-managed
      - local_pki: vault-tls-cert-managed
      - vault-package-installed
