{#- The guest's inbound firewall, generated from its roles (platform:guest:firewall):
    everything else is dropped. Only the project's own table is replaced, so
    rules that Docker or k3s add live on (and, on their guests, stopping the unit
    removes only that table). `nft -c` checks the file first. #}
{%- from 'common/map.jinja' import guest %}
include:
  - common.apt

common-firewall-ruleset-managed:
  file.managed:
    - name: /etc/nftables.conf
    - mode: '0755'
    - source: salt://common/files/nftables.conf.j2
    - template: jinja
    - context:
        guest: {{ guest | json }}
    - check_cmd: /usr/sbin/nft -c -f
    - require:
      - pkg: common-apt-packages-installed

common-firewall-service-running:
  unit.running:
    - name: nftables
    - enable: true
    - reload: true
    - watch:
      - file: common-firewall-ruleset-managed
{%- if guest.get('containers') %}

# Debian's unit flushes the whole ruleset when it stops (and restarts): Docker's
# and k3s's tables would go with it, and their published ports stop working until
# they restart. On a guest with containers, stopping takes only the platform's table.
common-firewall-stop-keeps-container-tables:
  file.managed:
    - name: /etc/systemd/system/nftables.service.d/platform.conf
    - contents: |
        [Service]
        ExecStop=
        ExecStop=-/usr/sbin/nft delete table inet platform
    - makedirs: true
    - mode: '0644'
    - require_in:
      - unit: common-firewall-service-running
{%- endif %}
