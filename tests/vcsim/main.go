// vcsim for Homeward's tests: govmomi's vCenter simulator (Debian's golang-github-vmware-govmomi-dev) with the
// primary site's shape: one datacenter, one cluster of two ESXi hosts, two local VMFS datastores (--vsan makes one
// vSAN), two VMs (--vms names them, e.g. after the master targets; --snapshot gives one a snapshot). It serves
// the vim25 SOAP API over TLS on a free loopback port, prints one JSON line (URL, certificate thumbprints, datastore
// folders), and exits when its stdin closes or on SIGTERM, removing the datastore folders it made.
//
// Built by `./x setup`: GO111MODULE=off GOPATH=/usr/share/gocode go build -o target/tools/vcsim ./tests/vcsim
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func thumbprint(sum []byte) string {
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// A fresh self-signed ECDSA certificate for 127.0.0.1, like the one a vCenter makes for itself at install (Go's
// built-in test certificate uses an RSA key too small for rustls).
func certificate() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	template := x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "vcsim.homeward.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, &template, &template, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func main() {
	user := flag.String("user", "administrator@vsphere.local", "the one account that may log in")
	password := flag.String("password", "", "its password (required)")
	vms := flag.String("vms", "", "comma-separated names for the model's VMs, e.g. the master targets' names")
	vsan := flag.String("vsan", "", "a datastore to report as vSAN; the others are VMFS, as an ESXi host's local ones")
	snapshot := flag.String("snapshot", "", "a VM (by its name after --vms) that has a snapshot")
	flag.Parse()
	if *password == "" {
		fmt.Fprintln(os.Stderr, "vcsim: --password is required")
		os.Exit(2)
	}

	model := simulator.VPX()
	model.Datacenter = 1
	model.Cluster = 1
	model.ClusterHost = 2
	model.Host = 0
	model.Datastore = 2
	model.Machine = 2
	if err := model.Create(); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim: create the model:", err)
		os.Exit(1)
	}
	for _, ref := range simulator.Map.All("Datastore") {
		ds := ref.(*simulator.Datastore)
		ds.Summary.Type = "VMFS"
		if ds.Name == *vsan {
			ds.Summary.Type = "vsan"
		}
	}
	if *vms != "" {
		names := strings.Split(*vms, ",")
		for i, ref := range simulator.Map.All("VirtualMachine") {
			if i < len(names) {
				vm := ref.(*simulator.VirtualMachine)
				vm.Name = names[i]
				vm.Config.Name = names[i]
				vm.Summary.Config.Name = names[i]
			}
		}
	}
	for _, ref := range simulator.Map.All("VirtualMachine") {
		vm := ref.(*simulator.VirtualMachine)
		if vm.Name == *snapshot {
			vm.CreateSnapshotTask(&types.CreateSnapshot_Task{This: vm.Self, Name: "before-patching"})
		}
	}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{certificate()}}
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(*user, *password)}
	server := model.Service.NewServer()

	folders := map[string]string{}
	for _, ref := range simulator.Map.All("Datastore") {
		ds := ref.(*simulator.Datastore)
		folders[ds.Name] = ds.Info.GetDatastoreInfo().Url
	}
	der := server.Certificate().Raw
	sha1sum := sha1.Sum(der)
	sha256sum := sha256.Sum256(der)
	sdk := *server.URL
	sdk.User = nil
	ready, _ := json.Marshal(map[string]interface{}{
		"url":               sdk.String(),
		"thumbprint_sha1":   thumbprint(sha1sum[:]),
		"thumbprint_sha256": thumbprint(sha256sum[:]),
		"datastores":        folders,
	})
	fmt.Println(string(ready))

	stop := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop <- struct{}{}
	}()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		stop <- struct{}{}
	}()
	<-stop
	server.Close()
	model.Remove()
}
