{#- The Salt master's own backup (role salt_master): its key pair and the
    accepted minion keys, and the Vault init file with the CA certificate the
    master trusts (PGP ciphertext: the operators' private keys decrypt it), shipped
    off the guest by the job `master` (backup/job.jinja). Restore before starting
    a rebuilt master: docs/backup.md. #}
{%- from 'backup/map.jinja' import backup, enabled %}
{%- from 'backup/job.jinja' import job with context %}
{%- if enabled %}
include:
  - backup.client

{{ job('master', 'salt_master', backup.master_paths) }}
{%- endif %}
