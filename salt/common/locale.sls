{%- from 'common/map.jinja' import site %}
{%- set timezone = site.get('timezone', 'UTC') %}
{%- set locale = site.get('locale', 'en_US.UTF-8') %}
include:
  - common.apt

common-locale-timezone-linked:
  file.symlink:
    - name: /etc/localtime
    - target: /usr/share/zoneinfo/{{ timezone }}
    - force: true
    - require:
      - pkg: common-apt-packages-installed

common-locale-timezone-named:
  file.managed:
    - name: /etc/timezone
    - contents: {{ timezone }}

common-locale-gen-managed:
  file.managed:
    - name: /etc/locale.gen
    - contents: |
        # Managed by Salt (common.locale)
        {{ locale }} {{ locale.split('.')[1] if '.' in locale else 'UTF-8' }}
    - require:
      - pkg: common-apt-packages-installed

common-locale-generated:
  cmd.run:
    - name: locale-gen
    - onchanges:
      - file: common-locale-gen-managed

common-locale-default-managed:
  file.managed:
    - name: /etc/default/locale
    - contents: LANG={{ locale }}
    - require:
      - cmd: common-locale-generated
