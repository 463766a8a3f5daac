{#- The server, its client and the exporter from Debian; with repository: pgdg,
    apt.postgresql.org first, signed by the key postgresql-common ships (nothing
    is downloaded to trust it). #}
{%- from 'postgresql/map.jinja' import postgresql, version %}
{%- if postgresql.repository == 'pgdg' %}

postgresql-package-common-installed:
  pkg.installed:
    - name: postgresql-common

postgresql-package-pgdg-repo-managed:
  pkgrepo.managed:
    - name: deb [signed-by={{ postgresql.pgdg.key }}] {{ postgresql.pgdg.uri }} {{ grains['oscodename'] }}-pgdg main
    - file: /etc/apt/sources.list.d/pgdg.list
    - aptkey: false
    - require:
      - pkg: postgresql-package-common-installed
    - require_in:
      - pkg: postgresql-package-installed
{%- endif %}

postgresql-package-installed:
  pkg.installed:
    - pkgs:
      - postgresql-{{ version }}
      - postgresql-client-{{ version }}
      - prometheus-postgres-exporter
