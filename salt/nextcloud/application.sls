{#- The Nextcloud server: the pinned release, proven (key fingerprint,
    SHA-512, signature) before it is unpacked; `occ maintenance:install`
    against the site's PostgreSQL with the passwords from Vault; the system
    configuration through `occ config:system:set`, each key only when it
    differs (config.php is occ's, never a template); background jobs by the
    timer; the calendar and contacts apps. A newer pinned version is an
    upgrade the master's `nextcloud.upgrade` runner approves after the
    database backup; an older one is refused. #}
{%- from 'nextcloud/map.jinja' import nextcloud, guest, database, system_config, php_bin %}
{%- set release = nextcloud.release %}
{%- set fetch_script = '/usr/local/sbin/nextcloud-fetch-release' %}
include:
  - nextcloud.data
  - nextcloud.redis
  - nextcloud.php
  - nextcloud.cron
  - nextcloud.secrets
{%- set has_database = database.get('name') and database.get('host') %}
{%- if not has_database %}

{#- A site may list the guest nowhere in site.databases: nothing can be
    installed, and the apply says why (the site still renders). #}
nextcloud-database-declared:
  test.fail_without_changes:
    - name: >-
        nextcloud: no database of site.databases lists this guest as a client (or no guest has the role
        postgresql); expected one, e.g. site.databases.nextcloud.clients: [{{ guest.get('name', '<this guest>') }}]
    - require_in:
      - nextcloud_occ: nextcloud-installed
{%- endif %}

nextcloud-release-tools-managed:
  file.managed:
    - names:
      - {{ fetch_script }}:
        - source: salt://nextcloud/files/nextcloud-fetch-release.sh
        - mode: '0755'
      - /usr/local/lib/nextcloud/occ-env.php:
        - source: salt://nextcloud/files/occ-env.php
        - mode: '0644'
    - user: root
    - group: root
    - makedirs: true

nextcloud-release-present:
  nextcloud_occ.release_present:
    - name: {{ nextcloud.root }}
    - version: '{{ release.version }}'
    - base_url: {{ release.base_url }}
    - key_url: {{ release.key_url }}
    - fingerprint: {{ release.key_fingerprint }}
    - sha512: '{{ release.sha512 }}'
    - cache_dir: {{ release.cache_dir }}
    - owner: {{ nextcloud.user }}
    - fetch_script: {{ fetch_script }}
    - approved: '{{ nextcloud.upgrade.approved }}'
    - require:
      - file: nextcloud-release-tools-managed
      - file: nextcloud-web-root-parent-managed
      - file: nextcloud-php-ini-managed
      - user: nextcloud-user-present

nextcloud-installed:
  nextcloud_occ.installed:
    - name: {{ nextcloud.root }}
    - database: {{ database | json }}
    - admin_user: {{ nextcloud.admin.user }}
    - admin_password_path: {{ nextcloud.admin.vault_path }}
    - mount: {{ nextcloud.vault_mount }}
    - data_dir: {{ nextcloud.data_dir }}
    - require:
      - nextcloud_occ: nextcloud-release-present
      - file: nextcloud-data-dir-managed
      - vault_server: nextcloud-admin-secret-generated

nextcloud-system-config:
  nextcloud_occ.system_config:
    - values: {{ system_config | json }}
    - require:
      - nextcloud_occ: nextcloud-installed
      - unit: nextcloud-redis-running

nextcloud-background-jobs-cron:
  nextcloud_occ.app_config:
    - name: core
    - values:
        backgroundjobs_mode: cron
    - require:
      - nextcloud_occ: nextcloud-installed
      - unit: nextcloud-cron-timer-running

nextcloud-apps-enabled:
  nextcloud_occ.apps_enabled:
    - apps: {{ nextcloud.apps | json }}
    - require:
      - nextcloud_occ: nextcloud-system-config

{#- What the admin overview checks (occ setupchecks): an error fails the
    apply, warnings are listed in the comment; it only reads. #}
nextcloud-setup-checks-pass:
  nextcloud_occ.setup_checks_pass:
    - name: {{ nextcloud.root }}
    - require:
      - nextcloud_occ: nextcloud-apps-enabled
      - nextcloud_occ: nextcloud-background-jobs-cron
      - unit: nextcloud-nginx-running
