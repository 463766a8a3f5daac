{#- States by role. Each guest's roles come from the site (pillar
    platform:guest:roles, derived by the platform ext_pillar, `base` first),
    and each role's SLS from the role catalog (pillar/platform/roles.sls).
    Roles switched off (converge: false) are not in platform:guest:roles.

    Custom modules (_modules, _states, _utils) are synced here, before any SLS
    is rendered, when the master's (pillar platform:extension_modules, their
    SHA-256) differ from those this minion last synced: Salt's own sync on every
    highstate (autoload_dynamic_modules) is off, for it asked the master about
    every kind of module on every run (~2 s a guest; sitectl.site.MINION_SETTINGS).
    The environment is named: without it, the sync renders this top file to
    find the environments, which would sync again. (So a `saltutil.sync_*`
    without saltenv= on a minion that never synced reports nothing new: this
    file synced everything while it looked for the environments.) #}
{%- set wanted = salt['pillar.get']('platform:extension_modules') %}
{%- set synced = salt['config.get']('cachedir') ~ '/platform-extension-modules' %}
{%- if wanted and not (salt['file.file_exists'](synced) and salt['file.read'](synced).strip() == wanted) %}
{%-   do salt['saltutil.sync_all'](saltenv='base', refresh=False) %}
{%-   do salt['file.write'](synced, wanted) %}
{%- endif %}
base:
{%- for role, spec in salt['pillar.get']('roles', {}) | dictsort %}
{%-   if spec.get('states') %}
  'platform:guest:roles:{{ role }}':
    - match: pillar
{%-     for sls in spec.states %}
    - {{ sls }}
{%-     endfor %}
{%-   endif %}
{%- endfor %}
