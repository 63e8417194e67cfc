"""X.509 with Debian's python3-cryptography (38): loading, Go-compatible checks
(IsCA, CheckSignatureFrom, VerifyHostname), generation as kubeadm does it, SPKI pins."""

import datetime
import hashlib
import ipaddress
import os
import secrets

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ONE_YEAR = datetime.timedelta(days=365)
TEN_YEARS = datetime.timedelta(days=3650)


class CertError(Exception):
    pass


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def certs_from_pem(data):
    if isinstance(data, str):
        data = data.encode()
    certs = []
    marker = b"-----BEGIN CERTIFICATE-----"
    for chunk in data.split(marker)[1:]:
        certs.append(x509.load_pem_x509_certificate(marker + chunk))
    if not certs:
        raise CertError("data does not contain any valid RSA or ECDSA certificates")
    return certs


def load_cert(path):
    try:
        return certs_from_pem(read_bytes(path))[0]
    except FileNotFoundError:
        raise CertError("couldn't load the certificate file %s: open %s: no such file or directory"
                        % (path, path)) from None
    except ValueError as e:
        raise CertError("couldn't load the certificate file %s: %s" % (path, e)) from None


def load_key_pem(data):
    if isinstance(data, str):
        data = data.encode()
    return serialization.load_pem_private_key(data, password=None)


def load_key(path):
    try:
        return load_key_pem(read_bytes(path))
    except FileNotFoundError:
        raise CertError("couldn't load the private key file %s: open %s: no such file or directory"
                        % (path, path)) from None
    except (ValueError, TypeError) as e:
        raise CertError("couldn't load the private key file %s: %s" % (path, e)) from None


def load_public_key_pem(data):
    return serialization.load_pem_public_key(data)


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key):
    if isinstance(key, rsa.RSAPrivateKey):
        fmt = serialization.PrivateFormat.TraditionalOpenSSL  # "RSA PRIVATE KEY", as kubeadm
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        fmt = serialization.PrivateFormat.TraditionalOpenSSL  # "EC PRIVATE KEY"
    else:
        fmt = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def public_key_pem(key):
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def is_ca(cert):
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _key_usage(cert):
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def check_signature_from(child, parent):
    """Go's (*Certificate).CheckSignatureFrom: None, or the error text."""
    if parent.version == x509.Version.v3 and not is_ca(parent):
        return "x509: invalid signature: parent certificate cannot sign this kind of certificate"
    ku = _key_usage(parent)
    if ku is not None and not ku.key_cert_sign:
        return "x509: invalid signature: parent certificate cannot sign this kind of certificate"
    pub = parent.public_key()
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            pub.verify(child.signature, child.tbs_certificate_bytes, padding.PKCS1v15(),
                       child.signature_hash_algorithm)
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(child.signature, child.tbs_certificate_bytes,
                       ec.ECDSA(child.signature_hash_algorithm))
        elif isinstance(pub, ed25519.Ed25519PublicKey):
            pub.verify(child.signature, child.tbs_certificate_bytes)
        else:
            return "x509: cannot verify signature: algorithm unimplemented"
    except InvalidSignature:
        if isinstance(pub, rsa.RSAPublicKey):
            return "crypto/rsa: verification error"
        if isinstance(pub, ec.EllipticCurvePublicKey):
            return "x509: ECDSA verification failure"
        return "x509: Ed25519 verification failure"
    except (ValueError, TypeError) as e:
        return "x509: %s" % e
    return None


def san_dns(cert):
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return ext.get_values_for_type(x509.DNSName)


def san_ips(cert):
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]


def _match_hostname(pattern, host):
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == host:
        return True
    p_labels, h_labels = pattern.split("."), host.split(".")
    if len(p_labels) != len(h_labels) or p_labels[0] != "*":
        return False
    return p_labels[1:] == h_labels[1:] and h_labels[0] != ""


def verify_hostname(cert, host):
    """Go's (*Certificate).VerifyHostname: None, or the x509.HostnameError text."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    ips = san_ips(cert)
    if ip is not None:
        if any(ipaddress.ip_address(s) == ip for s in ips):
            return None
        if not ips:
            return "x509: cannot validate certificate for %s because it doesn't contain any IP SANs" % host
        return "x509: certificate is valid for %s, not %s" % (", ".join(ips), host)
    names = san_dns(cert)
    if any(_match_hostname(n, host) for n in names):
        return None
    if not names:
        return "x509: certificate is not valid for any names, but wanted to match %s" % host
    return "x509: certificate is valid for %s, not %s" % (", ".join(names), host)


def spki_hash(cert):
    """kubeadm's pubkeypin.Hash: sha256 over the DER SubjectPublicKeyInfo, lowercase hex."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def new_key(algorithm="RSA-2048"):
    if algorithm == "ECDSA-P256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ECDSA-P384":
        return ec.generate_private_key(ec.SECP384R1())
    bits = {"RSA-2048": 2048, "RSA-3072": 3072, "RSA-4096": 4096}.get(algorithm, 2048)
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _name(cn, orgs=()):
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _sign_hash(key):
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _serial():
    return int.from_bytes(secrets.token_bytes(16), "big") >> 1 or 1


def new_ca(cn, key, validity=TEN_YEARS, not_before=None):
    now = datetime.datetime.utcnow()
    not_before = not_before or now - datetime.timedelta(minutes=5)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    b = (x509.CertificateBuilder()
         .subject_name(_name(cn)).issuer_name(_name(cn))
         .public_key(key.public_key()).serial_number(_serial())
         .not_valid_before(not_before).not_valid_after(now + validity)
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                      key_encipherment=True, data_encipherment=False,
                                      key_agreement=False, key_cert_sign=True, crl_sign=False,
                                      encipher_only=False, decipher_only=False), critical=True)
         .add_extension(ski, critical=False))
    return b.sign(key, _sign_hash(key))


def _authority_key_id(ca_cert):
    """The issuer's own SubjectKeyIdentifier, as Go's x509 does (`template.AuthorityKeyId =
    parent.SubjectKeyId`): a CA made elsewhere (khactl's rcgen) may derive its SKI otherwise
    than SHA-1 of the key, and OpenSSL builds chains by matching AKI to SKI."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())


def new_signed(ca_cert, ca_key, key, cn, orgs=(), dns=(), ips=(), server=False, client=False,
               validity=ONE_YEAR, not_before=None, not_after=None):
    """kubeadm's pkiutil.NewSignedCert: NotBefore is the CA's, KeyUsage digitalSignature
    (+keyEncipherment for RSA), EKU from the cert's profile."""
    now = datetime.datetime.utcnow()
    not_before = not_before or ca_cert.not_valid_before
    not_after = not_after or now + validity
    if not_after > ca_cert.not_valid_after:
        not_after = ca_cert.not_valid_after
    ekus = []
    if server:
        ekus.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        ekus.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    is_rsa = isinstance(key.public_key(), rsa.RSAPublicKey)
    b = (x509.CertificateBuilder()
         .subject_name(_name(cn, orgs)).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(_serial())
         .not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                      key_encipherment=is_rsa, data_encipherment=False,
                                      key_agreement=False, key_cert_sign=False, crl_sign=False,
                                      encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(_authority_key_id(ca_cert), critical=False))
    if ekus:
        b = b.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(ca_key, _sign_hash(ca_key))


def renew(cert, ca_cert, ca_key, key, validity=ONE_YEAR):
    """Re-sign `cert` with the same subject, SANs, key and EKUs and a new validity."""
    ekus = []
    try:
        ekus = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        pass
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return new_signed(ca_cert, ca_key, key, cn[0].value if cn else "", orgs,
                      dns=san_dns(cert), ips=san_ips(cert),
                      server=ExtendedKeyUsageOID.SERVER_AUTH in ekus,
                      client=ExtendedKeyUsageOID.CLIENT_AUTH in ekus, validity=validity,
                      not_before=ca_cert.not_valid_before)


def subject_cn(cert):
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return cn[0].value if cn else ""


def subject_orgs(cert):
    return [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def ext_key_usages(cert):
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return []


def key_matches_cert(key, cert):
    pub = lambda k: k.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return pub(key.public_key()) == pub(cert.public_key())


def key_algorithm(key_or_pub):
    pub = key_or_pub.public_key() if hasattr(key_or_pub, "public_key") else key_or_pub
    if isinstance(pub, rsa.RSAPublicKey):
        return "RSA-%d" % pub.key_size
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return "ECDSA-P%d" % pub.curve.key_size
    return type(pub).__name__


def new_csr(key, cn, orgs=()):
    return (x509.CertificateSigningRequestBuilder().subject_name(_name(cn, orgs))
            .sign(key, _sign_hash(key)))


def load_csr_pem(data):
    return x509.load_pem_x509_csr(data)


def csr_pem(csr):
    return csr.public_bytes(serialization.Encoding.PEM)


def write_atomic(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = "%s.tmp-%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
