{#- A new guest is up: highstate it. Run by reactor/cloud-created.sls; the
    guest must be in the site, or nothing is applied. #}
{%- set guest = pillar.get('provisioned_guest', '') %}
{%- set guests = salt['pillar.get']('site:guests', {}) %}
{%- if guest and guest in guests %}
orch-provisioned-reachable-{{ guest }}:
  salt.function:
    - name: test.ping
    - tgt: {{ guest }}
    - retry:
        attempts: 20
        interval: 3

orch-provisioned-highstate-{{ guest }}:
  salt.state:
    - tgt: {{ guest }}
    - highstate: true
    - require:
      - salt: orch-provisioned-reachable-{{ guest }}
{%- else %}
orch-provisioned-unknown-guest:
  test.fail_without_changes:
    - name: "'{{ guest }}' is not a guest of the site: nothing applied"
{%- endif %}
