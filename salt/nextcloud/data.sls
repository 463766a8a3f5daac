{#- The web root (the code) and the data directory, apart: the data directory
    is its own path, never under the web root, readable by the Nextcloud account
    only. When the site gives the guest a mount point holding it (PVE's mpN in
    production, a bind mount in the lab; site.guests.<name>.mounts), the
    directory is made only once that volume is mounted there: never on the root
    disk of a guest whose volume is missing. #}
{%- from 'nextcloud/map.jinja' import nextcloud, guest %}
{%- if (nextcloud.data_dir ~ '/').startswith(nextcloud.root ~ '/') or (nextcloud.root ~ '/').startswith(nextcloud.data_dir ~ '/') %}
{{ raise('nextcloud.data_dir ' ~ nextcloud.data_dir ~ ' and nextcloud.root ' ~ nextcloud.root ~ ' overlap; expected the data directory outside the web root') }}
{%- endif %}
{%- set found = {} %}
{%- for mount in guest.get('mounts') or [] %}
{%-   set path = mount.path.rstrip('/') %}
{%-   if nextcloud.data_dir == path or nextcloud.data_dir.startswith(path ~ '/') %}
{%-     if 'path' not in found or path | length > found.path | length %}
{%-       do found.update({'path': path}) %}
{%-     endif %}
{%-   endif %}
{%- endfor %}
include:
  - nextcloud.package
{%- if found %}

{%- set missing = 'nextcloud: ' ~ found.path ~ ' is not a mount point; the site gives ' ~ guest.name
                 ~ ' a volume there (site.guests.' ~ guest.name ~ '.mounts): attach it (on Proxmox: pct set'
                 ~ ' <vmid> -mpN ...) before Nextcloud writes its data onto the root disk' %}

nextcloud-data-volume-mounted:
  cmd.run:
    - name: >-
        echo {{ missing | quote }} >&2; exit 1
    - unless: mountpoint -q {{ found.path | quote }}
{%- endif %}

nextcloud-data-dir-managed:
  file.directory:
    - name: {{ nextcloud.data_dir }}
    - user: {{ nextcloud.user }}
    - group: {{ nextcloud.user }}
    - mode: '0750'
    - makedirs: true
    - require:
      - user: nextcloud-user-present
{%- if found %}
      - cmd: nextcloud-data-volume-mounted
{%- endif %}

nextcloud-web-root-parent-managed:
  file.directory:
    - name: {{ salt['file.dirname'](nextcloud.root) }}
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: true
