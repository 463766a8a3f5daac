{%- from 'common/map.jinja' import common, site, guest, params, base_packages %}
{%- from 'backup/map.jinja' import enabled as backup_enabled %}
{%- set apt = site.get('apt', {}) %}
{#- What this guest's roles install in the same apt transaction as the base
    packages (a role's `install_with_base` in its defaults.yaml): one resolver
    and dpkg run for the guest instead of one per role. `from` names the role's
    settings that hold its packages (a name, a list, or name: version; a name's
    {key} is that setting's value, as postgresql-{version}), `unless` settings
    that, when set, and `when` settings that, when not equal to the value given,
    leave the packages to the role's own states. The backup client's packages
    join on the guests of the roles that ship a backup job (backup's
    `with_base_roles`) when the site names a backup repository. Only
    packages whose service may start before the rest of the base state (the
    firewall comes after this transaction): RabbitMQ is not one, its broker's
    connection to epmd, made before the ruleset was loaded, was seen to outlive
    a restart of the broker, which then could not register its name again. #}
{%- set with_base = {'names': [], 'pins': {}} %}
{%- for role in guest.get('roles', []) %}
{%-   set settings = params.get(role) or {} %}
{%-   set spec = settings.get('install_with_base') or {} %}
{%-   set skipped = [] %}
{%-   for key in spec.get('unless') or [] if settings | traverse(key) %}
{%-     do skipped.append(key) %}
{%-   endfor %}
{%-   for key, wanted in (spec.get('when') or {}) | dictsort if settings | traverse(key) != wanted %}
{%-     do skipped.append(key) %}
{%-   endfor %}
{%-   for key in spec.get('from') or [] if not skipped %}
{%-     set value = settings | traverse(key) %}
{%-     if value is mapping %}
{%-       do with_base.pins.update(value) %}
{%-     elif value is string %}
{%-       do with_base.names.append(value.format_map(settings)) %}
{%-     elif value %}
{%-       for name in value %}
{%-         do with_base.names.append(name.format_map(settings)) %}
{%-       endfor %}
{%-     endif %}
{%-   endfor %}
{%- endfor %}
{%- if backup_enabled and guest.get('roles', []) | select('in', params.backup.with_base_roles) | list %}
{%-   do with_base.names.extend(params.backup.packages) %}
{%- endif %}
{%- set pkgs = [] %}
{%- for name in base_packages + common.packages + with_base.names if name not in pkgs and name not in with_base.pins %}
{%-   do pkgs.append(name) %}
{%- endfor %}
{%- for name, version in with_base.pins | dictsort %}
{%-   do pkgs.append({name: version}) %}
{%- endfor %}

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
    - pkgs: {{ pkgs | json }}
    - install_recommends: false
    # the ssh execution module (ssh_auth in common.admins) loads only once ssh exists
    - reload_modules: true
    - require:
      - module: common-apt-lists-refreshed
