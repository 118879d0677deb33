// ocicheck validates an OCI bundle with runtime-tools' own validator (the "validate" package
// that Debian's golang-github-opencontainers-runtime-tools-dev ships), host-specific checks on,
// as `oci-runtime-tool validate` does. Built offline by tests/conformance/runtime_tools.py.
//
// Validator.CheckAll would fetch the JSON schema from the network (validate.go's
// configSchemaTemplate), which this machine cannot reach; so the schema check runs here against
// the schema that Debian's golang-github-opencontainers-specs-dev installs (-schema), and the
// validator's other checks run one by one, in CheckAll's order.
//
// Usage: ocicheck -schema DIR/config-schema.json BUNDLE.
// Exit 0: valid; 1: the errors, one a line; 2: unreadable bundle.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-multierror"
	"github.com/opencontainers/runtime-tools/validate"
	"github.com/xeipuuv/gojsonschema"
)

func main() {
	schema := flag.String("schema", "", "path of runtime-spec's config-schema.json")
	flag.Parse()
	if flag.NArg() != 1 || *schema == "" {
		fmt.Fprintln(os.Stderr, "usage: ocicheck -schema config-schema.json BUNDLE")
		os.Exit(2)
	}
	bundle := flag.Arg(0)
	v, err := validate.NewValidatorFromPath(bundle, true, "linux")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var errs *multierror.Error
	abs, err := filepath.Abs(*schema)
	if err != nil {
		errs = multierror.Append(errs, err)
	} else {
		config, _ := filepath.Abs(filepath.Join(bundle, "config.json"))
		result, err := gojsonschema.Validate(gojsonschema.NewReferenceLoader("file://"+abs),
			gojsonschema.NewReferenceLoader("file://"+config))
		if err != nil {
			errs = multierror.Append(errs, err)
		} else {
			for _, e := range result.Errors() {
				errs = multierror.Append(errs, fmt.Errorf("schema: %s", e))
			}
		}
	}
	for _, check := range []func() error{v.CheckPlatform, v.CheckRoot, v.CheckMandatoryFields,
		v.CheckSemVer, v.CheckMounts, v.CheckProcess, v.CheckLinux, v.CheckAnnotations,
		v.CheckHooks} {
		errs = multierror.Append(errs, check())
	}
	if err := errs.ErrorOrNil(); err != nil {
		for _, e := range errs.Errors {
			fmt.Println(e)
		}
		os.Exit(1)
	}
}
