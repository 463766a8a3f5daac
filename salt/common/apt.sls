{%- from 'common/map.jinja' import common, site, guest, params, base_packages %}
{%- set apt = site.get('apt', {}) %}
{#- What this guest's roles install in the same apt transaction as the base
    packages (a role's `install_with_base` in its defaults.yaml): one resolver
    and dpkg run for the guest instead of one per role. The SLS a role names in
    `after` (the config its package's postinst starts the service with) are
    applied before that transaction. #}
{%- set with_base = {'packages': [], 'after': []} %}
{%- for role in guest.get('roles', []) %}
{%-   set spec = (params.get(role) or {}).get('install_with_base') or {} %}
{%-   do with_base.packages.extend(spec.get('packages') or []) %}
{%-   do with_base.after.extend(spec.get('after') or []) %}
{%- endfor %}
{%- set after = with_base.after | unique | list %}
{%- if after %}

include: {{ after | json }}
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
{%- for sls in after %}
      - sls: {{ sls }}
{%- endfor %}
