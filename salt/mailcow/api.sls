{#- mailcow's API answers with the key from Vault (after the stack first
    starts, its PHP and database take a while): what the API's states wait
    for. The API is the one at platform:mail:api (the guest's internal address
    and the mail route's port), unless the minion's config names another. #}
{%- from 'mailcow/map.jinja' import mc %}
{%- if mc.stack.converge %}
include:
  - mailcow.stack
{%- endif %}

mailcow-api-ready:
  mailcow_api.ready:
    - name: mailcow-api
{%- if mc.stack.converge %}
    - require:
      - cmd: mailcow-stack-up
{%- endif %}
