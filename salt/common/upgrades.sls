{%- from 'common/map.jinja' import common %}
{%- set uu = common.unattended_upgrades %}
include:
  - common.apt

common-upgrades-periodic-managed:
  file.managed:
    - name: /etc/apt/apt.conf.d/20auto-upgrades
    - contents: |
        // Managed by Salt (common.upgrades)
        APT::Periodic::Update-Package-Lists "{{ 1 if uu.enabled else 0 }}";
        APT::Periodic::Unattended-Upgrade "{{ 1 if uu.enabled else 0 }}";
    - require:
      - pkg: common-apt-packages-installed

common-upgrades-policy-managed:
  file.managed:
    - name: /etc/apt/apt.conf.d/52platform-unattended-upgrades
    - contents: |
        // Managed by Salt (common.upgrades): security updates only.
        Unattended-Upgrade::Origins-Pattern {
          "origin=Debian,codename=${distro_codename}-security,label=Debian-Security";
        };
        Unattended-Upgrade::Automatic-Reboot "{{ 'true' if uu.automatic_reboot else 'false' }}";
        Unattended-Upgrade::Automatic-Reboot-Time "{{ uu.automatic_reboot_time }}";
    - require:
      - pkg: common-apt-packages-installed
