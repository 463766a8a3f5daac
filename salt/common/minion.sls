{#- The minion's own configuration. A change restarts the minion once no job of
    its own is running any more: a restart inside the run (other roles' states
    come after this one) would cut the run off and lose its return. #}
{%- from 'common/map.jinja' import guest %}

common-minion-config-managed:
  file.managed:
    - name: /etc/salt/minion.d/10-platform.conf
    - makedirs: true
    - contents: |
        # Managed by Salt (common.minion), from the site.
        id: {{ guest.name }}
        master: {{ guest.master }}
        # From its first start on (sitectl.site.MINION_SETTINGS, with the reasons):
{%- for key, value in guest.get('minion', {}) | dictsort %}
        {{ key }}: {{ value }}
{%- endfor %}
        random_reauth_delay: 10
        log_level_logfile: warning
        # Each job in a process of its own (Salt's default, kept on purpose): while a
        # long highstate runs, saltutil.find_job and test.ping still answer, so the
        # master's gather_job_timeout never takes a busy minion for a gone one, and a
        # job's memory is freed when it ends.
        multiprocessing: true
        # The minion's grains are read at start and kept for the life of the process
        # (no periodic refresh): a highstate reads them, never gathers them again.
        grains_refresh_every: 0

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

common-minion-restart-scheduled:
  cmd.run:
    - name: systemd-run --collect --unit=platform-salt-minion-restart /usr/local/sbin/platform-minion-restart
    - require:
      - file: common-minion-restart-script-managed
    - onchanges:
      - file: common-minion-config-managed
