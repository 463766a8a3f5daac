{#- The cluster's unit: restarted when its settings change (they need it),
    reloaded when only pg_hba.conf changed, and only after the check passed.
    Debian starts the clusters of postgresql.service (its generator reads each
    cluster's start.conf), so that unit is the one enabled. #}
{%- from 'postgresql/map.jinja' import service, version, cluster, check_script %}
include:
  - postgresql.config

postgresql-service-running:
  unit.running:
    - name: {{ service }}
    - watch:
      - file: postgresql-config-file-managed
      - pkg: postgresql-package-installed

postgresql-service-enabled:
  unit.enabled:
    - name: postgresql
    - require:
      - pkg: postgresql-package-installed

postgresql-service-hba-checked:
  cmd.run:
    - name: >-
        {{ check_script | quote }} --hba
    - onchanges:
      - file: postgresql-hba-file-managed
    - require:
      - unit: postgresql-service-running

postgresql-service-hba-reloaded:
  cmd.run:
    - name: >-
        pg_ctlcluster {{ version | string | quote }} {{ cluster | quote }} reload
    - onchanges:
      - file: postgresql-hba-file-managed
    - require:
      - cmd: postgresql-service-hba-checked
