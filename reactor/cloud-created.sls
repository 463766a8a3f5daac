{#- salt/cloud/<name>/created: bring a guest salt-cloud created to its highstate.
    Nothing in the event is trusted, not even who sent it (a minion can put any
    tag and data on the master's bus through Salt's batch event form): the name
    from the tag is a hint, and _runners/platform.py acts only when the name is
    a guest of the site that answers, salt-cloud's provider has that instance,
    and this creation (its accepted key) has not been highstated yet. #}
{%- set name = tag.split('/')[2] if tag.count('/') == 3 else '' %}
{%- if name is match('^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$') %}
cloud-created-highstate-{{ name }}:
  runner.platform.provisioned:
    - args:
      - name: {{ name }}
{%- endif %}
