{#- The engine: Docker's apt repository with its key checked by fingerprint and
    the versions pinned (flavor docker-ce), or Debian's docker.io (flavor debian).
    iptables is named: Docker publishes ports through it, and docker-ce only
    recommends it. Its backend does not matter to the platform's filter (Debian's
    default, nft, puts Docker's rules beside it in `nft list ruleset`). The engine
    is installed (and so first started) only after the firewall is loaded. #}
{%- from 'docker/map.jinja' import docker, flavor, key_check_script %}
include:
  - common.apt
  - common.firewall
  - docker.guest
{%- if docker.flavor == 'docker-ce' %}

docker-package-key-tools-installed:
  pkg.installed:
    - pkgs: [gpg]
    - install_recommends: false
    - require:
      - module: common-apt-lists-refreshed
      - test: docker-guest-nesting-checked

docker-package-key-check-script-managed:
  file.managed:
    - name: {{ key_check_script }}
    - source: salt://docker/files/check-repo-key.sh.j2
    - template: jinja
    - context:
        fingerprint: {{ flavor.key_fingerprint | json }}
    - mode: '0755'
    - check_cmd: /bin/sh -n
    - require:
      - pkg: docker-package-key-tools-installed

# The key file is downloaded without a hash (Docker publishes none); it replaces
# the keyring only if its primary key has the pinned fingerprint.
docker-package-repo-key-managed:
  file.managed:
    - name: {{ flavor.keyring }}
    - source: {{ flavor.key_url }}
    - skip_verify: true
    - check_cmd: {{ key_check_script | quote }}
    - makedirs: true
    - mode: '0644'
    - require:
      - file: docker-package-key-check-script-managed

docker-package-repo-managed:
  pkgrepo.managed:
    - name: deb [arch={{ grains['osarch'] }} signed-by={{ flavor.keyring }}] {{ flavor.repo }} {{ grains.get('oscodename', 'bookworm') }} stable
    - file: /etc/apt/sources.list.d/docker.list
    - aptkey: false
    - require:
      - file: docker-package-repo-key-managed
{%- endif %}

docker-package-iptables-installed:
  pkg.installed:
    - pkgs: [iptables]
    - install_recommends: false
    - require:
      - module: common-apt-lists-refreshed
      - test: docker-guest-nesting-checked

docker-package-installed:
  pkg.installed:
    - pkgs:
{%- for name, version in flavor.packages | dictsort %}
{%-   if version %}
      - {{ name }}: {{ version | json }}
{%-   else %}
      - {{ name }}
{%-   endif %}
{%- endfor %}
    - install_recommends: false
    - require:
      - pkg: docker-package-iptables-installed
      # the engine starts with its package: never before the forward chain filters what it publishes
      - unit: common-firewall-service-running
{%- if docker.flavor == 'docker-ce' %}
      - pkgrepo: docker-package-repo-managed
{%- endif %}
