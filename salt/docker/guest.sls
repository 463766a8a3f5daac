{#- Docker only where the firewall filters what containers publish: a guest with
    a nesting role has common.firewall's forward chain (ports a container
    publishes open only as the role catalog says). Elsewhere Docker's own
    FORWARD rules would open every published port, so the state refuses. #}
{%- from 'docker/map.jinja' import guest %}

docker-guest-nesting-checked:
{%- if guest.get('containers') %}
  test.succeed_without_changes:
    - name: a role of this guest has nesting; the forward chain filters published ports
{%- else %}
  test.fail_without_changes:
    - name: >-
        Docker runs only on a guest with a role that has `nesting: true` in the role catalog
        (mailcow, gitlab_runner): only there does the firewall filter the ports containers
        publish, and only there is the LXC guest nested; this guest's roles:
        {{ guest.get('roles', []) | join(', ') or 'none' }}
{%- endif %}
