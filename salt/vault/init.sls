{#- The vault role: the server (HashiCorp Vault or OpenBao), its TLS, config and
    unit, then unseal and configuration as code through the vault_server states. #}
include:
  - vault.package
  - vault.tls
  - vault.config
  - vault.service
  - vault.unseal
  - vault.configure
  - vault.backup
