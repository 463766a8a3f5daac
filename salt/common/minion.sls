{#- The minion's own configuration: its id, its master and the site's settings
    (sitectl.site.MINION_SETTINGS, with the reasons), which salt-cloud's drivers
    write before the first boot. A change of what the running minion has restarts
    it once no job of its own is running any more: a restart inside the run
    (other roles' states come after this one) would cut the run off and lose its
    return. A file written with what the minion already runs (a new guest's first
    highstate) restarts nothing. #}
{%- from 'common/map.jinja' import guest %}
{%- set wanted = {'id': guest.name, 'master': guest.master} %}
{%- do wanted.update(guest.get('minion', {})) %}
{%- set differs = [] %}
{%- for key, value in wanted | dictsort if opts.get(key) != value %}
{%-   do differs.append(key) %}
{%- endfor %}

common-minion-config-managed:
  file.managed:
    - name: /etc/salt/minion.d/10-platform.conf
    - makedirs: true
    - contents: |
        # Managed by Salt (common.minion), from the site (sitectl.site.MINION_SETTINGS:
        # the reasons for each setting are there).
{%- for key, value in wanted | dictsort %}
        {{ key }}: {{ (value | string | lower) if value is boolean else value }}
{%- endfor %}

{%- set proc = opts.get('cachedir', '/var/cache/salt/minion') ~ '/proc' %}

common-minion-restart-script-managed:
  file.managed:
    - name: /usr/local/sbin/platform-minion-restart
    - mode: '0755'
    - contents: |
        #!/bin/sh
        # Managed by Salt (common.minion): restart the minion once none of its jobs runs.
        # A job is seen by its file in {{ proc }} and by its process (ProcessPayload(jid=...)):
        # the file alone was seen to vanish for a moment in the middle of a long highstate.
        sleep 2
        deadline=$(( $(date +%s) + 3600 ))
        while [ "$(date +%s)" -lt "$deadline" ]; do
            if [ -z "$(ls -A {{ proc }} 2>/dev/null)" ] && ! pgrep -f 'ProcessPayload[(]jid=' >/dev/null; then
                sleep 2  # and still none a moment later
                if [ -z "$(ls -A {{ proc }} 2>/dev/null)" ] && ! pgrep -f 'ProcessPayload[(]jid=' >/dev/null; then
                    break
                fi
            fi
            sleep 1
        done
        exec systemctl restart salt-minion

{%- if differs %}

# The running minion differs from the file in: {{ differs | join(', ') }}.
common-minion-restart-scheduled:
  cmd.run:
    - name: systemd-run --collect --unit=platform-salt-minion-restart /usr/local/sbin/platform-minion-restart
    - require:
      - file: common-minion-restart-script-managed
    - onchanges:
      - file: common-minion-config-managed
{%- endif %}
