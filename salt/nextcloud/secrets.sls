{#- The admin's password, generated into Vault once (roles/nextcloud/admin,
    under this role's own policy); the installation reads it there, with the
    database owner's (roles/postgresql/users/<owner>, which the site's grants
    let this guest read). Neither is ever in pillar, a command line or output. #}
{%- from 'nextcloud/map.jinja' import nextcloud %}

nextcloud-admin-secret-generated:
  vault_server.secret_generated:
    - name: {{ nextcloud.admin.vault_path }}
    - mount: {{ nextcloud.vault_mount }}
    - fields:
        password: {{ nextcloud.admin.password | json }}
