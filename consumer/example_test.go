package consumer_test

import (
	"context"
	"os/signal"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/chatgroupd/chatgroupd/consumer"
	"github.com/chatgroupd/chatgroupd/dispatcher"
	"github.com/chatgroupd/chatgroupd/dlq"
)

type applyAll struct{}

func (applyAll) Dispatch(ctx context.Context, t dispatcher.Task) (dispatcher.Outcome, error) {
	return dispatcher.Outcome{Result: dispatcher.Applied, Attempts: 1}, nil
}

type dropLetters struct{}

func (dropLetters) DeadLetter(ctx context.Context, m kafka.Message, l dlq.Letter) error { return nil }

// A consumer runs until SIGTERM, then drains, commits and leaves the group.
func ExampleConsumer_Run() {
	c, err := consumer.New(consumer.Config{
		Brokers:       []string{"127.0.0.1:9092"},
		Topic:         "chat.contact-groups",
		GroupID:       "chatgroupd",
		Dispatcher:    applyAll{},
		DeadLetterer:  dropLetters{},
		ReorderWindow: time.Second,
		Logger:        zap.NewExample(),
	})
	if err != nil {
		panic(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	_ = c.Run(ctx)
}
