{#- PHP 8.2 with the modules Nextcloud asks for, nginx and Redis from Debian,
    in one apt transaction, and the account PHP-FPM runs Nextcloud as (a member
    of redis's group, for the socket). #}
{%- from 'nextcloud/map.jinja' import nextcloud %}
nextcloud-packages-installed:
  pkg.installed:
    - pkgs: {{ nextcloud.packages | json }}
    - install_recommends: false

nextcloud-user-present:
  user.present:
    - name: {{ nextcloud.user }}
    - system: true
    - home: /var/lib/{{ nextcloud.user }}
    - createhome: true
    - shell: /usr/sbin/nologin
    - groups: [redis]
    - require:
      - pkg: nextcloud-packages-installed
