{#- Vault must be initialised (once, from the master: docs/vault.md) and unsealed.
    Sealed with no key share given, this fails the run and says so: every state
    that needs Vault requires it. #}
{%- from 'vault/map.jinja' import vault, local_url, ca_cert %}
include:
  - vault.service

vault-unseal-unsealed:
  vault_server.unsealed:
    - name: {{ local_url }}
    - url: {{ local_url }}
    - verify: {{ ca_cert }}
    - key_files: {{ vault.unseal.key_files | json }}
    - retry:  # the listener needs a moment after a restart
        attempts: 5
        interval: 2
    - require:
      - unit: vault-service-running
