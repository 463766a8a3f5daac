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
        hash_type: sha256
        random_reauth_delay: 10
        log_level_logfile: warning

{%- set proc = opts.get('cachedir', '/var/cache/salt/minion') ~ '/proc' %}

common-minion-restart-scheduled:
  cmd.run:
    - name: >-
        systemd-run --collect --unit=platform-salt-minion-restart
        sh -c 'sleep 2; timeout 3600 sh -c "while [ -n \"\$(ls -A {{ proc }} 2>/dev/null)\" ]; do sleep 1; done";
        systemctl restart salt-minion'
    - onchanges:
      - file: common-minion-config-managed
