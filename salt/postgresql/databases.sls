{#- The site's databases, each owned by its login role. CONNECT is revoked from
    PUBLIC, so a role reaches only the databases it owns even where pg_hba.conf
    would let it try (pg_hba.conf already admits each owner to its own only). #}
{%- from 'postgresql/map.jinja' import databases %}
include:
  - postgresql.users

{%- for name, db in databases | dictsort %}

postgresql-database-{{ name }}-present:
  postgres_database.present:
    - name: {{ name }}
    - owner: {{ db.owner }}
    - user: postgres
    - require:
      - pg_role: postgresql-user-{{ db.owner }}-present

postgresql-database-{{ name }}-public-connect-revoked:
  cmd.run:
    - name: >-
        psql -XqAt -c {{ ('REVOKE CONNECT, TEMPORARY ON DATABASE "' ~ name ~ '" FROM PUBLIC') | quote }}
    - unless: >-
        test "$(psql -XqAt -c {{ ("SELECT has_database_privilege('public', '" ~ name ~ "', 'CONNECT')") | quote }})" = f
    - runas: postgres
    - cwd: /
    - require:
      - postgres_database: postgresql-database-{{ name }}-present
{%- endfor %}
