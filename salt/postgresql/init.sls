{#- The postgresql role: the server from Debian (or PGDG), its configuration
    and client access from the site, login roles whose passwords live in Vault,
    the databases, the Prometheus exporter and logical backups. #}
include:
  - postgresql.package
  - postgresql.config
  - postgresql.service
  - postgresql.users
  - postgresql.databases
  - postgresql.exporter
  - postgresql.backup
