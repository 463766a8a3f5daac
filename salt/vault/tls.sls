{#- The listener's certificate, from an internal CA kept on this guest by the
    local_pki states (_states/local_pki.py: in-process, no nested state run).
    Clients trust the CA certificate (ca.crt), never the leaf. #}
{%- from 'vault/map.jinja' import vault, flavor, guest, tls_dir, ca_cert %}
{%- set names = [guest.get('fqdn', grains['id']), guest.get('name', grains['id']), 'localhost'] %}
{%- set addresses = [guest.get('ip', '127.0.0.1'), '127.0.0.1'] | unique %}
include:
  - vault.package

vault-tls-dir-managed:
  file.directory:
    - name: {{ tls_dir }}
    - user: root
    - group: {{ flavor.user }}
    - mode: '0750'
    - makedirs: true
    - require:
      - vault-package-installed

vault-tls-ca-key-managed:
  local_pki.private_key_managed:
    - name: {{ tls_dir }}/ca.key
    - curve: secp384r1
    - mode: '0600'
    - require:
      - file: vault-tls-dir-managed

vault-tls-ca-cert-managed:
  local_pki.certificate_managed:
    - name: {{ ca_cert }}
    - private_key: {{ tls_dir }}/ca.key
    - signing_private_key: {{ tls_dir }}/ca.key
    - CN: {{ guest.get('name', grains['id']) }} internal CA
    - ca: true
    - key_usage: [cRLSign, keyCertSign]
    - days_valid: {{ vault.tls.ca_days_valid }}
    - days_remaining: {{ vault.tls.ca_days_remaining }}
    - mode: '0644'
    - require:
      - local_pki: vault-tls-ca-key-managed

vault-tls-key-managed:
  local_pki.private_key_managed:
    - name: {{ tls_dir }}/server.key
    - curve: secp256r1
    - user: root
    - group: {{ flavor.user }}
    - mode: '0640'
    - require:
      - file: vault-tls-dir-managed

vault-tls-cert-managed:
  local_pki.certificate_managed:
    - name: {{ tls_dir }}/server.crt
    - private_key: {{ tls_dir }}/server.key
    - signing_private_key: {{ tls_dir }}/ca.key
    - signing_cert: {{ ca_cert }}
    - CN: {{ names[0] }}
    - subject_alt_names: {{ (names | map('regex_replace', '^', 'DNS:') | list + addresses | map('regex_replace', '^', 'IP:') | list) | json }}
    - key_usage: [digitalSignature, keyEncipherment]
    - extended_key_usage: [serverAuth]
    - days_valid: {{ vault.tls.cert_days_valid }}
    - days_remaining: {{ vault.tls.cert_days_remaining }}
    - mode: '0644'
    - require:
      - local_pki: vault-tls-key-managed
      - local_pki: vault-tls-ca-cert-managed
