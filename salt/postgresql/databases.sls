{#- The site's databases, each owned by its login role. CONNECT and TEMPORARY
    are revoked from PUBLIC, so a role reaches only the databases it owns even
    where pg_hba.conf would let it try (pg_hba.conf already admits each owner to
    its own only). One state per database (pg_role.database_present): the
    server's roles and databases are read in one psql session per run. #}
{%- from 'postgresql/map.jinja' import databases %}
include:
  - postgresql.users

{%- for name, db in databases | dictsort %}

postgresql-database-{{ name }}-present:
  pg_role.database_present:
    - name: {{ name }}
    - owner: {{ db.owner }}
    - require:
      - pg_role: postgresql-user-{{ db.owner }}-present
{%- endfor %}
