{#- Login roles: each database owner of the site and the exporter's role. Each
    password is generated into Vault once (roles/postgresql/users/<role>) and
    read by the pg_role state when it runs; changing it in Vault and applying
    again sets it with ALTER ROLE, without a restart. #}
{%- from 'postgresql/map.jinja' import postgresql, owners, users_path %}
include:
  - postgresql.service

{%- for role in owners + [postgresql.exporter.role] %}

postgresql-user-{{ role }}-secret-generated:
  vault_server.secret_generated:
    - name: {{ users_path }}/{{ role }}
    - mount: {{ postgresql.vault.mount }}
    - fields:
        password: {{ postgresql.vault.password | json }}

postgresql-user-{{ role }}-present:
  pg_role.present:
    - name: {{ role }}
    - password_path: {{ users_path }}/{{ role }}
    - mount: {{ postgresql.vault.mount }}
{%-   if role == postgresql.exporter.role %}
    - member_of: [pg_monitor]
{%-   endif %}
    - require:
      - vault_server: postgresql-user-{{ role }}-secret-generated
      - unit: postgresql-service-running
{%- endfor %}
