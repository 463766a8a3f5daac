{#- The minion's own configuration. A change restarts the minion a few seconds
    after this run has returned (a restart inside the run would cut it off). #}
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

common-minion-restart-scheduled:
  cmd.run:
    - name: systemd-run --collect --on-active=5 --unit=platform-salt-minion-restart systemctl restart salt-minion
    - onchanges:
      - file: common-minion-config-managed
