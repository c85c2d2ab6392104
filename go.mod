module github.com/tandemrt/tandem

go 1.26
