{#- States by role. Each guest's roles come from the site (pillar
    platform:guest:roles, derived by the platform ext_pillar, `base` first),
    and each role's SLS from the role catalog (pillar/platform/roles.sls).
    Roles switched off (converge: false) are not in platform:guest:roles. #}
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
