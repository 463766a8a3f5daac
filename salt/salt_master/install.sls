{#- The master's Python environment: the checkout's venv with the project
    installed from the checkout itself (`pip install -e`), so Salt is the
    version pyproject.toml pins, the same pin the minions' Salt is built from,
    and `sitectl` is the checkout's. Reinstalled only when the checkout's
    pyproject.toml differs from the one the venv was made from. pip's options
    come from pillar: none (PyPI) in production, the lab's wheelhouse where
    PyPI is not the guest's to reach. #}
{%- from 'salt_master/map.jinja' import salt_master, checkout, venv with context %}
{%- set stamp = venv ~ '/.installed-from' %}
{%- set pip = [venv ~ '/bin/pip', 'install', '--quiet'] + salt_master.install.pip_options + ['-e', checkout] %}

salt-master-install-packages-installed:
  pkg.installed:
    - pkgs: {{ salt_master.install.packages | json }}

salt-master-install-venv-installed:
  cmd.run:
    - name: >-
        python3 -m venv {{ venv | quote }} &&
        {% for arg in pip %}{{ arg | quote }} {% endfor %}&&
        sha256sum {{ (checkout ~ '/pyproject.toml') | quote }} > {{ stamp | quote }}
    - unless: >-
        sha256sum --status -c {{ stamp | quote }} &&
        test -x {{ (venv ~ '/bin/salt-master') | quote }} && test -x {{ (venv ~ '/bin/sitectl') | quote }}
    - require:
      - pkg: salt-master-install-packages-installed
      - sls: salt_master.checkout
