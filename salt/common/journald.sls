{%- from 'common/map.jinja' import common %}

common-journald-limits-managed:
  file.managed:
    - name: /etc/systemd/journald.conf.d/10-platform.conf
    - makedirs: true
    - contents: |
        # Managed by Salt (common.journald)
        [Journal]
        SystemMaxUse={{ common.journald.system_max_use }}
        MaxRetentionSec={{ common.journald.max_retention_sec }}

common-journald-service-running:
  unit.running:
    - name: systemd-journald
    - watch:
      - file: common-journald-limits-managed
