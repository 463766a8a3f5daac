{%- from 'common/map.jinja' import common, site, guest, base_packages %}
{%- set apt = site.get('apt', {}) %}
{#- The guest's roles may put packages into this one transaction (role catalog,
    base_transaction): the SLS that must come before them are applied first. #}
{%- set catalog = salt['pillar.get']('roles', {}) %}
{%- set with_base = {'packages': [], 'after': []} %}
{%- for role in guest.get('roles', []) %}
{%-   set spec = (catalog.get(role) or {}).get('base_transaction') or {} %}
{%-   do with_base.packages.extend(spec.get('packages', [])) %}
{%-   do with_base.after.extend(spec.get('after', [])) %}
{%- endfor %}
{%- if with_base.after %}
include:
{%-   for sls in with_base.after | unique %}
  - {{ sls }}
{%-   endfor %}
{%- endif %}

common-apt-sources-list-emptied:
  file.managed:
    - name: /etc/apt/sources.list
    - contents: '# Managed by Salt: the sources are in /etc/apt/sources.list.d/debian.sources'

common-apt-debian-sources-managed:
  file.managed:
    - name: /etc/apt/sources.list.d/debian.sources
    - source: salt://common/files/debian.sources.j2
    - template: jinja
    - context:
        mirror: {{ apt.get('mirror', 'http://deb.debian.org/debian') }}
        security_mirror: {{ apt.get('security_mirror', 'http://deb.debian.org/debian-security') }}
        codename: {{ grains.get('oscodename', 'bookworm') }}

# Salt's own refresh (not a bare apt-get update): it also clears the minion's
# once-per-start refresh flag, so the first pkg state after it does not read the
# lists from the mirror a second time.
common-apt-lists-refreshed:
  module.run:
    - pkg.refresh_db:
      - failhard: true  # a source that fails to update fails the state
    - onchanges:
      - file: common-apt-sources-list-emptied
      - file: common-apt-debian-sources-managed

# Without recommends: a server guest gets what is named, nothing else (the node
# exporter's recommended collectors, for one, expect hardware a guest has not).
common-apt-packages-installed:
  pkg.installed:
    - pkgs: {{ (base_packages + common.packages + with_base.packages) | unique | list | json }}
    - install_recommends: false
    # the ssh execution module (ssh_auth in common.admins) loads only once ssh exists
    - reload_modules: true
    - require:
      - module: common-apt-lists-refreshed
{%- for sls in with_base.after | unique %}
      - sls: {{ sls }}
{%- endfor %}
