{#- The server, its client and the exporter (postgresql.packages) from Debian,
    installed with the base packages by common.apt (this state then finds them
    installed, and installs them when the role is applied alone); with
    repository: pgdg, apt.postgresql.org first, signed by the key
    postgresql-common ships (nothing is downloaded to trust it). #}
{%- from 'postgresql/map.jinja' import postgresql %}
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
{%- for name in postgresql.packages %}
      - {{ name.format_map(postgresql) }}
{%- endfor %}
