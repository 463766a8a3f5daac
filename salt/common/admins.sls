{#- Admin accounts from site.admins: public keys only, passwordless sudo through
    the platform-admins group. A member of that group who is no longer in the
    site is removed (the home directory is kept). #}
{%- from 'common/map.jinja' import site %}
{%- set admins = site.get('admins', {}) %}
{%- set current = (salt['group.info']('platform-admins') or {}).get('members', []) %}
include:
  - common.apt

common-admins-group-present:
  group.present:
    - name: platform-admins
    - system: true

common-admins-sudoers-managed:
  file.managed:
    - name: /etc/sudoers.d/platform-admins
    - mode: '0440'
    - user: root
    - group: root
    - contents: |
        # Managed by Salt (common.admins)
        %platform-admins ALL=(ALL:ALL) NOPASSWD: ALL
    - check_cmd: /usr/sbin/visudo -cf
    - require:
      - pkg: common-apt-packages-installed
{%- for name, admin in admins | dictsort %}

common-admins-user-{{ name }}-present:
  user.present:
    - name: {{ name }}
    - shell: {{ admin.get('shell', '/bin/bash') }}
    - createhome: true
    - groups: [platform-admins]
    - require:
      - group: common-admins-group-present

common-admins-user-{{ name }}-keys-managed:
  ssh_auth.manage:
    - user: {{ name }}
    - ssh_keys: {{ admin.ssh_keys | json }}
    - require:
      - user: common-admins-user-{{ name }}-present
      - pkg: common-apt-packages-installed
{%- endfor %}
{%- for name in current if name not in admins %}

common-admins-user-{{ name }}-absent:
  user.absent:
    - name: {{ name }}
    - purge: false
{%- endfor %}
