package imsim

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
)

// FuzzAPIBodies throws arbitrary bodies at every API: the answer is always a 200 with a JSON
// envelope, and the limits hold afterwards whatever was accepted — groups and conversations per
// user, names unique and within the length limit (renames included), ids unique.
func FuzzAPIBodies(f *testing.F) {
	f.Add(0, `{"From_Account":"a","GroupContactItem":[{"GroupName":"g","ContactItem":[{"Type":1,"To_Account":"b"}]}]}`)
	f.Add(1, `{"From_Account":"a","StartIndex":3}`)
	f.Add(2, `{"From_Account":"a","UpdateType":1,"UpdateGroup":{"UpdateGroupType":2,"OldGroupName":"g","ContactUpdateItem":[{"ContactOptType":1,"ContactItem":{"Type":2,"ToGroupId":"x"}}]}}`)
	f.Add(3, `{"From_Account":"a","GroupName":["g"]}`)
	f.Add(0, `{"From_Account":"a","GroupContactItem":[{"GroupName":"g","ContactItem":[{"Type":1}]}]}`)
	f.Add(1, `[]`)
	f.Add(2, `{"UpdateGroup":null}`)
	f.Add(2, `{"From_Account":"a","UpdateType":1,"UpdateGroup":{"UpdateGroupType":1,"OldGroupName":"g","NewGroupName":"h"}}`)
	f.Add(2, `{"From_Account":"a","UpdateType":1,"UpdateGroup":{"UpdateGroupType":2,"OldGroupName":"g","ContactUpdateItem":[{"ContactOptType":2,"ContactItem":{"Type":1,"To_Account":"b"}}]}}`)
	f.Add(3, `{"From_Account":"a","GroupName":["g","g","h"]}`)
	paths := []string{im.PathCreateContactGroup, im.PathGetContactGroup, im.PathUpdateContactGroup, im.PathDelContactGroup}
	clk := newClock()
	sim, err := New(Config{SDKAppID: testAppID, SecretKey: testKey, Now: clk.Now, RateLimit: 1 << 30,
		MaxGroups: 3, MaxContacts: 5, Seed: 1})
	if err != nil {
		f.Fatal(err)
	}
	sig, _ := im.GenUserSig(testKey, testAppID, DefaultAdmin, clk.Now(), 24*time.Hour)
	q := "?sdkappid=1400000000&identifier=administrator&usersig=" + sig
	f.Fuzz(func(t *testing.T, api int, body string) {
		path := paths[uint(api)%uint(len(paths))]
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path+q, strings.NewReader(body)))
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d", rec.Code)
		}
		var env im.BaseResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil {
			t.Fatalf("answer %q: %v", rec.Body.String(), err)
		}
		if (env.ErrorCode == 0) != (env.ActionStatus == "OK") {
			t.Fatalf("envelope %+v", env)
		}
		sim.mu.Lock()
		defer sim.mu.Unlock()
		for name, a := range sim.accounts {
			if len(a.Groups) > 3 || len(a.refs) > 5 {
				t.Fatalf("%s: %d groups, %d conversations", name, len(a.Groups), len(a.refs))
			}
			n := 0
			for _, c := range a.refs {
				n += c
			}
			m := 0
			names, ids := map[string]bool{}, map[int64]bool{}
			for _, g := range a.Groups {
				m += len(g.Contacts)
				if names[g.Name] || ids[g.ID] || g.Name == "" || len(g.Name) > DefaultMaxNameBytes || g.ID >= a.NextID {
					t.Fatalf("%s: group %q id %d (next %d) repeats or breaks a limit", name, g.Name, g.ID, a.NextID)
				}
				names[g.Name], ids[g.ID] = true, true
			}
			if n != m {
				t.Fatalf("%s: refs %d, memberships %d", name, n, m)
			}
		}
	})
}
