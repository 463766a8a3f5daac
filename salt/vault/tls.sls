{#- The listener's certificate, from an internal CA managed by Salt (x509_v2) on
    this guest. Clients trust the CA certificate (ca.crt), never the leaf. #}
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
  x509.private_key_managed:
    - name: {{ tls_dir }}/ca.key
    - algo: ec
    - keysize: 384
    - mode: '0600'
    - require:
      - file: vault-tls-dir-managed

vault-tls-ca-cert-managed:
  x509.certificate_managed:
    - name: {{ ca_cert }}
    - signing_private_key: {{ tls_dir }}/ca.key
    - CN: {{ guest.get('name', grains['id']) }} internal CA
    - basicConstraints: critical, CA:true
    - keyUsage: critical, cRLSign, keyCertSign
    - subjectKeyIdentifier: hash
    - days_valid: {{ vault.tls.ca_days_valid }}
    - mode: '0644'
    - require:
      - x509: vault-tls-ca-key-managed

vault-tls-key-managed:
  x509.private_key_managed:
    - name: {{ tls_dir }}/server.key
    - algo: ec
    - keysize: 256
    - user: root
    - group: {{ flavor.user }}
    - mode: '0640'
    - require:
      - file: vault-tls-dir-managed

vault-tls-cert-managed:
  x509.certificate_managed:
    - name: {{ tls_dir }}/server.crt
    - private_key: {{ tls_dir }}/server.key
    - signing_private_key: {{ tls_dir }}/ca.key
    - signing_cert: {{ ca_cert }}
    - CN: {{ names[0] }}
    - subjectAltName: {{ (names | map('regex_replace', '^', 'DNS:') | list + addresses | map('regex_replace', '^', 'IP:') | list) | join(', ') }}
    - basicConstraints: critical, CA:false
    - keyUsage: critical, digitalSignature, keyEncipherment
    - extendedKeyUsage: serverAuth
    - days_valid: {{ vault.tls.cert_days_valid }}
    - days_remaining: {{ vault.tls.cert_days_remaining }}
    - mode: '0644'
    - require:
      - x509: vault-tls-key-managed
      - x509: vault-tls-ca-cert-managed
