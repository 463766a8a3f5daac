{#- The server configuration: raft storage, TLS listeners on the guest's address
    and on loopback, telemetry for Prometheus, the audit device (OpenBao). #}
{%- from 'vault/map.jinja' import vault, flavor, guest, port, metrics_port, tls_dir %}
include:
  - vault.package
  - vault.tls

vault-config-dirs-managed:
  file.directory:
    - names:
      - {{ flavor.data_dir }}
      - {{ flavor.log_dir }}
    - user: {{ flavor.user }}
    - group: {{ flavor.user }}
    - mode: '0750'
    - makedirs: true
    - require:
      - vault-package-installed

vault-config-file-managed:
  file.managed:
    - name: {{ flavor.config_dir }}/server.hcl
    - source: salt://vault/files/server.hcl.j2
    - template: jinja
    - user: root
    - group: {{ flavor.user }}
    - mode: '0640'
    - makedirs: true
    - context:
        vault: {{ vault | json }}
        flavor: {{ flavor | json }}
        guest: {{ guest | json }}
        port: '{{ port }}'
        metrics_port: '{{ metrics_port }}'
        tls_dir: {{ tls_dir }}
    - require:
      - file: vault-config-dirs-managed
