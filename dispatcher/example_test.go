package dispatcher_test

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

// groupLimit answers like the API for a user who already has 20 conversation groups: gets
// succeed, creates fail with 51010.
type groupLimit struct{}

func (groupLimit) CreateContactGroup(context.Context, *im.CreateRequest) (*im.CreateResponse, error) {
	return nil, &im.Error{API: im.APICreate, Class: im.ClassPermanent, Code: im.CodeTooManyGroups,
		Info: "more than 20 conversation groups", HTTPStatus: 200}
}

func (groupLimit) GetContactGroup(context.Context, *im.GetRequest) (*im.GetResponse, error) {
	return &im.GetResponse{BaseResponse: im.BaseResponse{ActionStatus: "OK"}, CompleteFlag: 1}, nil
}

func (groupLimit) UpdateContactGroup(context.Context, *im.UpdateRequest) (*im.UpdateResponse, error) {
	return &im.UpdateResponse{BaseResponse: im.BaseResponse{ActionStatus: "OK"}}, nil
}

func (groupLimit) DelContactGroup(context.Context, *im.DeleteRequest) (*im.DeleteResponse, error) {
	return &im.DeleteResponse{BaseResponse: im.BaseResponse{ActionStatus: "OK"}}, nil
}

func (groupLimit) RefreshSig() {}

func Example() {
	d, err := dispatcher.New(dispatcher.Config{API: groupLimit{}})
	if err != nil {
		panic(err)
	}
	// The consumer calls SetPartitions on every rebalance: here this replica owns partitions
	// 0, 2 and 4 of 6, so it may make 34+33+33 = 100 of the group's 200 creates per second, from
	// a second from now (the partitions' previous owner may have called a moment ago).
	d.SetPartitions([]int{0, 2, 4}, 6)

	ctx, cancel := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.Run(gctx) }) // probes while paused

	ev := &event.Event{EventID: "e1", EventType: event.TypeContactGroupCreated, FromAccount: "alice",
		GroupName: "friends", Contacts: []event.Contact{{Type: event.ContactC2C, ToAccount: "bob"}}}
	o, err := d.Dispatch(ctx, dispatcher.Task{Event: ev})
	if err != nil {
		panic(err) // only when ctx ends first
	}
	fmt.Println(o.Result, o.Code, o.Attempts)
	fmt.Println(string(o.Detail))

	cancel()
	_ = g.Wait()
	// Output:
	// rejected 51010 1
	// {"GroupName":"friends","Failed":[{"Type":1,"To_Account":"bob","ResultCode":51010,"ResultInfo":"more than 20 conversation groups"}]}
}
