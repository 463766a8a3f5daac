{#- The guest's inbound firewall, generated from its roles (platform:guest:firewall):
    everything else is dropped. Only the project's own table is replaced, so
    rules that Docker or k3s add live on. `nft -c` checks the file first. #}
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
  service.running:
    - name: nftables
    - enable: true
    - reload: true
    - watch:
      - file: common-firewall-ruleset-managed
