{#- PHP-FPM 8.2 for Nextcloud: its settings for the FPM and CLI SAPIs, its own
    pool (Debian's `www` pool goes), a candidate pool checked by php-fpm
    before it replaces the live one, and a reload (not a restart) on change. #}
{%- from 'nextcloud/map.jinja' import nextcloud, guest, site, php, php_dir, fpm_service, fpm_binary, fpm_socket,
                                      fpm_pool, max_body, timeout %}
{%- set check_script = '/usr/local/sbin/nextcloud-fpm-check' %}
include:
  - nextcloud.package

nextcloud-php-ini-managed:
  file.managed:
    - names:
{%- for sapi in ('fpm', 'cli') %}
      - {{ php_dir }}/{{ sapi }}/conf.d/90-nextcloud.ini:
        - context:
            sapi: {{ sapi }}
{%- endfor %}
    - source: salt://nextcloud/files/php.ini.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - defaults:
        memory_limit: {{ php.memory_limit }}
        max_body: {{ max_body }}
        timeout: {{ timeout }}
        timezone: {{ site.get('timezone', 'UTC') }}
        opcache: {{ php.opcache | json }}
        apcu_shm_size: {{ php.apcu_shm_size }}
    - require:
      - pkg: nextcloud-packages-installed

nextcloud-php-fpm-check-managed:
  file.managed:
    - name: {{ check_script }}
    - source: salt://nextcloud/files/fpm-check.sh.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0755'
    - context:
        fpm_binary: {{ fpm_binary }}

nextcloud-php-fpm-pool-managed:
  file.managed:
    - name: {{ php_dir }}/fpm/pool.d/nextcloud.conf
    - source: salt://nextcloud/files/fpm-pool.conf.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: {{ check_script | quote }}
    - tmp_ext: .conf
    - context:
        user: {{ nextcloud.user }}
        socket: {{ fpm_socket }}
        pool: {{ fpm_pool | json }}
        timeout: {{ timeout }}
        max_body: {{ max_body }}
        memory_limit: {{ php.memory_limit }}
        hostname: {{ guest.get('name', 'nextcloud') }}
    - require:
      - pkg: nextcloud-packages-installed
      - user: nextcloud-user-present
      - file: nextcloud-php-fpm-check-managed

{#- After our pool exists: php-fpm refuses to start without any pool. #}
nextcloud-php-fpm-www-pool-absent:
  file.absent:
    - name: {{ php_dir }}/fpm/pool.d/www.conf
    - require:
      - file: nextcloud-php-fpm-pool-managed

nextcloud-php-fpm-running:
  unit.running:
    - name: {{ fpm_service }}
    - enable: true
    - reload: true
    - watch:
      - file: nextcloud-php-ini-managed
      - file: nextcloud-php-fpm-pool-managed
      - file: nextcloud-php-fpm-www-pool-absent
