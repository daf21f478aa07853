package node

import (
	"encoding/pem"
	"fmt"
	"os"

	"github.com/swdist/swdist/hierarchy/admin"
	"github.com/swdist/swdist/hierarchy/cert"
)

const adminPEM = "SWDIST ADMIN CERTIFICATE"

// EncodeAdminCert gives an admin certificate's file form (PEM).
func EncodeAdminCert(s admin.Signed) ([]byte, error) {
	data, err := cert.Marshal(s)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: adminPEM, Bytes: data}), nil
}

// ReadAdminCert loads an admin certificate file.
func ReadAdminCert(path string) (admin.Signed, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return admin.Signed{}, fmt.Errorf("read admin certificate: %w (get it from 'swdist admin add' on a managing node)", err)
	}
	s, err := ReadAdminCertText(data)
	if err != nil {
		return admin.Signed{}, fmt.Errorf("admin certificate %s: %w", path, err)
	}
	return s, nil
}

// ReadAdminCertText parses an admin certificate's file form.
func ReadAdminCertText(data []byte) (admin.Signed, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != adminPEM {
		return admin.Signed{}, fmt.Errorf("not a PEM %q block", adminPEM)
	}
	var s admin.Signed
	if err := cert.Unmarshal(block.Bytes, &s); err != nil {
		return admin.Signed{}, err
	}
	return s, nil
}
