{#- Redis for Nextcloud's file locking and distributed cache: no TCP port, a
    unix socket its group (redis, which the Nextcloud account is in) may use,
    no persistence (locks and cache only). #}
{%- from 'nextcloud/map.jinja' import nextcloud %}
include:
  - nextcloud.package

nextcloud-redis-config-managed:
  file.managed:
    - name: /etc/redis/redis.conf
    - source: salt://nextcloud/files/redis.conf.j2
    - template: jinja
    - user: redis
    - group: redis
    - mode: '0640'
    - context:
        socket: {{ nextcloud.redis.socket }}
        maxmemory: {{ nextcloud.redis.maxmemory }}
    - require:
      - pkg: nextcloud-packages-installed

nextcloud-redis-running:
  unit.running:
    - name: redis-server
    - enable: true
    - watch:
      - file: nextcloud-redis-config-managed
