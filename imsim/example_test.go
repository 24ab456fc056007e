package imsim_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
)

// A test starts the simulator, points the IM client at it, and reads back what the API saw.
func Example() {
	sim, err := imsim.New(imsim.Config{SDKAppID: 1400000000, SecretKey: "dev-key", MaxGroups: 1})
	if err != nil {
		panic(err)
	}
	defer sim.Close()
	srv := httptest.NewServer(sim)
	defer srv.Close()

	client, err := im.New(im.Config{SDKAppID: 1400000000, SecretKey: "dev-key", BaseURL: srv.URL})
	if err != nil {
		panic(err)
	}
	create := func(name string) error {
		_, err := client.CreateContactGroup(context.Background(), &im.CreateRequest{
			FromAccount: "user15",
			GroupContactItem: []im.GroupContactItem{{GroupName: name,
				ContactItem: []im.ContactItem{{Type: im.ContactC2C, ToAccount: "user0"}}}},
		})
		return err
	}
	fmt.Println("first:", create("work"))
	var e *im.Error
	if err := create("family"); errors.As(err, &e) {
		fmt.Println("second:", e.Code, e.Class) // MaxGroups is 1 here; the real limit is 20
	}
	st := sim.Stats()
	fmt.Println("groups:", len(sim.Groups("user15")), "creates:", st.APIs[im.APICreate].Total, "duplicate creates:", st.DuplicateCreates)
	// Output:
	// first: <nil>
	// second: 51010 permanent
	// groups: 1 creates: 2 duplicate creates: 0
}
