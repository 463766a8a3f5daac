{#- The base state every guest gets. #}
include:
  - common.apt
  - common.upgrades
  - common.locale
  - common.admins
  - common.sshd
  - common.firewall
  - common.node_exporter
  - common.log_shipper
  - common.journald
  - common.minion
