{#- The web root (the code) and the data directory, apart: the data directory
    is its own path (a Proxmox mount point in production), never under the web
    root, readable by the Nextcloud account only. #}
{%- from 'nextcloud/map.jinja' import nextcloud %}
{%- if (nextcloud.data_dir ~ '/').startswith(nextcloud.root ~ '/') or (nextcloud.root ~ '/').startswith(nextcloud.data_dir ~ '/') %}
{{ raise('nextcloud.data_dir ' ~ nextcloud.data_dir ~ ' and nextcloud.root ' ~ nextcloud.root ~ ' overlap; expected the data directory outside the web root') }}
{%- endif %}
include:
  - nextcloud.package

nextcloud-data-dir-managed:
  file.directory:
    - name: {{ nextcloud.data_dir }}
    - user: {{ nextcloud.user }}
    - group: {{ nextcloud.user }}
    - mode: '0750'
    - makedirs: true
    - require:
      - user: nextcloud-user-present

nextcloud-web-root-parent-managed:
  file.directory:
    - name: {{ salt['file.dirname'](nextcloud.root) }}
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: true
